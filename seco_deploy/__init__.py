"""seco-deploy: train SeCo from image tags, export it, and write masks for folders of images."""

__version__ = "0.1.0"
