"""Generation: the exact-count balanced plan (``plan``) and, later, the sharded generator run."""
