"""Figures as inline images: for the HTML reports and for Dagster's Markdown metadata."""

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def figure_base64(fig: plt.Figure, dpi: int = 100) -> str:
    """The figure as a base64 PNG; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figure_html(fig: plt.Figure, alt: str = "plot") -> str:
    return f"<img alt='{alt}' src='data:image/png;base64,{figure_base64(fig)}'/>"


def figure_markdown(fig: plt.Figure, alt: str = "plot") -> str:
    return f"![{alt}](data:image/png;base64,{figure_base64(fig)})"
