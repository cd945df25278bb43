"""Prefect flows: they only compose tasks from ``tasks/``. ``flows.cli`` is the ``synthmri`` console script."""

__all__: list[str] = []
