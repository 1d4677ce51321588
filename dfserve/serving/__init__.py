"""Triton serving: generated model repository, python-backend models, the server launcher."""
