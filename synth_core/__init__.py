"""SynthMRI Factory's domain library. Pure functions and I/O through one store; never imports Prefect."""

__version__ = "0.1.0"

__all__ = ["__version__"]
