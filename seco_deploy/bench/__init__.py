"""``seco benchmark``: every deployment format of one checkpoint, side by side, on the same images.

Layers (each module one job; imports run downwards):

- :mod:`~seco_deploy.bench.formats`: the registry of formats (runtime x precision), what each needs
  and why a machine cannot run it;
- :mod:`~seco_deploy.bench.exports`: each format's model file, exported once and cached beside the
  checkpoint (reused while the checkpoint and the export options are unchanged);
- :mod:`~seco_deploy.bench.measure`: the measurements of one format inside one process;
- :mod:`~seco_deploy.bench.worker`: that process (``python -m seco_deploy.bench.worker``): a crash in a
  runtime (OpenCV DNN's segfaults) ends it, never the benchmark;
- :mod:`~seco_deploy.bench.runner`: the benchmark itself, one worker per format, rows in order;
- :mod:`~seco_deploy.bench.report`: the rows as a table, Markdown and JSON.
"""
