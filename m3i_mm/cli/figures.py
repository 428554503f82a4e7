"""Writing the analysis tools' matplotlib figures."""
import io
from typing import Optional

__all__ = ['save_png']


def save_png(fig, path: str, dpi: int = 100, colors: Optional[int] = None) -> None:
    """Save ``fig`` as an RGB PNG (no alpha channel), optionally reduced to a palette of
    ``colors`` colours (fast octree, which keeps the saturated marker colours that median
    cut merges; a photograph then takes about a third of the bytes)."""
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as image:
        picture = image.convert('RGB')
    if colors is not None:
        if not 2 <= colors <= 256:
            raise ValueError(f'a PNG palette has 2..256 colours, got {colors}')
        picture = picture.quantize(colors, method=Image.Quantize.FASTOCTREE)
    picture.save(path, format='PNG', optimize=True)
