"""Host-side file I/O: the validated ``.npy``/``.npz`` reader (:mod:`portgd.io.npz`) that
checkpoints and data files go through, and the writer of ``portgd predict``'s files
(:mod:`portgd.io.predictions`). These modules work on host NumPy arrays, the format files
hold (DESIGN.md, "The one rule"); nothing in the math core imports them."""
