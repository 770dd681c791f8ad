"""irmas_lib: the library behind the IRMAS instrument-recognition course.

Importing it is cheap and offline: heavy modules (torch, Lightning, PANNs) load only when their
submodules are imported.
"""
__version__ = "0.1.0"
