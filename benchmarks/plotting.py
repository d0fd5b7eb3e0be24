"""What the benchmarks' pictures share."""


def headless_pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported only when a picture is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot
