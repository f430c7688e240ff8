"""What every figure and report shares: a status reads the same everywhere, and matplotlib
draws without a display (cluster nodes have none)."""

STATUS_COLOURS = {  # colour-blind safe (ColorBrewer Dark2), grey for what is not there
    "ok": "#1b9e77",
    "qc_failed": "#d95f02",
    "failed": "#e7298a",
    "not_in_fov": "#999999",
}


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it costs a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
