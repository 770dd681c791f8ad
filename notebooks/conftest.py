"""nbval settings for the course's notebooks (``make nbval``).

stderr is not compared: it carries progress bars and status lines that appear only where there is work
to do or outside CI's reduced run (``IRMAS_QUICK=1`` switches the bars off), so a learner's full run,
which the committed outputs come from, and CI's run differ there by design. stdout, results and
errors are compared as before.

``make nbval`` runs the notebooks two at a time (pytest-xdist, ``--dist loadfile``: a notebook's cells
stay in order in one kernel), after it has made the data they read (mini-IRMAS, or ``$IRMAS_ROOT``) and
its feature cache. Notebooks 06 and 07 share the notebooks' trained model: when they run side by side,
whichever asks first trains it and the other waits for it (``irmas_lib.course.trained_checkpoint``'s
file lock).
"""


def pytest_collection_modifyitems(items):
    for item in items:
        notebook = getattr(item, "parent", None)
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and "stderr" not in skip:
            notebook.skip_compare = tuple(skip) + ("stderr",)
