"""Image files (png, jpg, tiff, webp): every frame is a page, read by OCR (``ingest.readers.ocr``).

The size is checked from the header before anything is decoded, so a small file that decodes to gigapixels
(a "decompression bomb") costs nothing; a multi-page TIFF keeps its page numbers like a PDF.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from ingest.readers.base import Parsed, ReadError, Work
from ingest.readers.ocr import check_pixels, join_with_ocr, read_pages


def parse_image(data: bytes, work: Work) -> Parsed:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own guard, past twice its 89 MP warning
        raise ReadError(f"image is over the {work.ocr.max_pixels / 1e6:g} MP limit (RAG_OCR_MAX_MEGAPIXELS): {exc}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ReadError(f"not a readable image: {exc}") from None
    with image:
        frames = getattr(image, "n_frames", 1)

        def render(number: int) -> Image.Image:
            image.seek(number - 1)
            check_pixels(image.width, image.height, work, "image" if frames == 1 else f"page {number}")
            try:
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # transparent is paper, not ink
                    rgba = image.convert("RGBA")
                    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
                return image.convert("L")
            except OSError as exc:  # truncated or corrupt pixel data: found only when decoded
                raise ReadError(f"not a readable image: {exc}") from None

        ocr = read_pages(render, range(1, frames + 1), work)
    text, meta = join_with_ocr([""] * frames, ocr)
    if not text:
        raise ReadError("no text found in the image (OCR)")
    meta["format"] = image.format
    return text, None, meta
