"""Decoding (issue 23.8): the default decoder ignores EXIF orientation as torchvision's and
SiameseIM's loaders do; ``decode_backend='cv2'`` applies it as mmcv does."""
import io

import mmcv
import numpy as np
import pytest
from PIL import Image

from m3i_mm.datasets import DECODE_BACKENDS, BadSampleError, UnlabelledImageDataset, decode_image
from m3i_mm.demo.photo_datasets import load_photo

#: EXIF orientation -> numpy transform turning the stored pixels upright (a viewer's view).
UPRIGHT = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1),
           8: lambda a: np.rot90(a, 1)}


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
    """A 48 x 64 RGB crop of a bundled photo (not square: rotations change its shape)."""
    return load_photo('astronaut')[100:148, 180:244]


def jpeg(image: Image.Image, orientation: int = 0) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation  # the EXIF Orientation tag
    image.save(buf, format='JPEG', quality=95, exif=exif.tobytes())
    return buf.getvalue()


def pil_reference(data: bytes) -> np.ndarray:
    """torchvision's ``pil_loader`` (``Image.open(f).convert('RGB')``), as BGR."""
    return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))[..., ::-1]


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_ignored_by_default_and_applied_by_cv2(photo, orientation):
    data = jpeg(Image.fromarray(photo), orientation)
    stored = decode_image(jpeg(Image.fromarray(photo)), 'plain.jpg', backend='cv2')
    default = decode_image(data, 'x.jpg')
    assert default.shape == (48, 64, 3) and default.flags['C_CONTIGUOUS']
    assert np.array_equal(default, pil_reference(data))  # bit for bit: torchvision's loader
    upright = decode_image(data, 'x.jpg', backend='cv2')
    assert upright.shape == UPRIGHT[orientation](stored).shape
    assert np.array_equal(upright, UPRIGHT[orientation](stored))
    assert np.array_equal(upright, mmcv.imfrombytes(data, flag='color'))  # mmcv's loader
    # a viewer's upright image is PIL's decode turned by the tag
    assert np.abs(upright.astype(int) - UPRIGHT[orientation](default)).max() <= 2


def test_cmyk_jpeg_is_decoded_as_pil_does(photo):
    cmyk = jpeg(Image.fromarray(photo).convert('CMYK'))
    assert Image.open(io.BytesIO(cmyk)).mode == 'CMYK'
    default = decode_image(cmyk, 'cmyk.jpg')
    assert np.array_equal(default, pil_reference(cmyk))
    cv2 = decode_image(cmyk, 'cmyk.jpg', backend='cv2')
    assert cv2.shape == default.shape
    # OpenCV's CMYK conversion rounds differently from PIL's (at most one level here)
    assert np.abs(cv2.astype(int) - default.astype(int)).max() <= 1


def test_sources_take_the_decode_backend(photo, tmp_path):
    (tmp_path / 'rotated.jpg').write_bytes(jpeg(Image.fromarray(photo), 6))
    shapes = {b: UnlabelledImageDataset(str(tmp_path), decode_backend=b)[0]['img'].shape
              for b in DECODE_BACKENDS}
    assert shapes == {'pillow': (48, 64, 3), 'cv2': (64, 48, 3)}
    with pytest.raises(ValueError, match="decode_backend must be one of \\('pillow', 'cv2'\\)"):
        UnlabelledImageDataset(str(tmp_path), decode_backend='turbojpeg')


@pytest.mark.parametrize('backend', DECODE_BACKENDS)
def test_undecodable_bytes_are_bad_samples_with_both_backends(backend):
    with pytest.raises(BadSampleError, match='undecodable image') as err:
        decode_image(b'\x00\x01 not an image' * 10, 'x.jpg', backend=backend)
    assert err.value.kind == 'undecodable image'
