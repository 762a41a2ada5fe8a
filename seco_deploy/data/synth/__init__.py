"""A synthetic dataset that has the co-occurrence problem SeCo targets, in VOC layout.

Scenes: a sky above a horizon and textured ground below, with background clutter (bushes,
rocks, houses, posts, clouds), six foreground classes (boat, train, person, horse, bird, car)
and two contexts that are background in the masks: ``water`` under boats and ``rails`` under
trains. A classifier trained from image tags can score "boat" by looking at the water, and its
CAM lights the water up. ``seco data synth`` calls :func:`synthesize`.

Modules, lower layers first (each imports only the ones above it):

- :mod:`.profiles`: classes, contexts, couplings, :class:`SynthProfile` and :data:`PROFILES`;
- :mod:`.layout`: the files of a set on disk; :func:`load_synth_info`, :func:`read_context_mask`;
- :mod:`.canvas`: the canvas, sprites, smooth noise and the shared colour palette;
- :mod:`.backgrounds`: sky and ground, water, rails, clutter;
- :mod:`.objects`: the six object drawers;
- :mod:`.scenes`: :class:`Scene` and :func:`render_scene` (the plan, the layout, the drawing);
- :mod:`.summary`: :class:`SynthSummary`, the statistics of a set;
- :mod:`.preview`: :func:`contact_sheet`;
- :mod:`.writer`: :func:`synthesize`.
"""

from seco_deploy.data.synth.layout import load_synth_info, read_context_mask
from seco_deploy.data.synth.preview import contact_sheet
from seco_deploy.data.synth.profiles import CLASSES, CONTEXT_OF, CONTEXTS, PAIRS, PROFILES, SynthProfile
from seco_deploy.data.synth.scenes import Scene, render_scene
from seco_deploy.data.synth.summary import SynthSummary
from seco_deploy.data.synth.writer import synthesize

__all__ = [
    "CLASSES",
    "CONTEXTS",
    "CONTEXT_OF",
    "PAIRS",
    "PROFILES",
    "Scene",
    "SynthProfile",
    "SynthSummary",
    "contact_sheet",
    "load_synth_info",
    "read_context_mask",
    "render_scene",
    "synthesize",
]
