"""The hostile-input corpus (``corpus.py``) and the harness that runs it (``harness.py``)."""
