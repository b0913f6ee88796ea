"""One sample per file: images (Pillow), volumes (NIfTI, nibabel) and ``.npy`` arrays, channels first.

``read_raw`` keeps the stored dtype (so 8-bit studies can be packed as uint8); ``read_sample``
gives the float32 tensor a model sees. Every failure is a ``SampleReadError`` naming the file.
Pillow and nibabel are imported by the first read of their format.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SUPPORTED_EXTENSIONS = (*IMAGE_EXTENSIONS, *NIFTI_EXTENSIONS, ".npy")
FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_SAMPLE_VALUES = 2**27  # a 512^3 volume; a header declaring more is refused before any memory is taken for it


class SampleReadError(ValueError):
    """A sample file that cannot be used, with what the CLI needs to say so in one paragraph.

    ``row_id`` is the table's id of the row (None when the file is read on its own); ``hint``
    says what to do about it. The fields survive pickling (errors raised in DataLoader workers).
    """

    def __init__(self, message: str, *, path: str | Path | None = None, row_id: object = None, hint: str | None = None):
        self.message, self.path, self.row_id, self.hint = message, None if path is None else str(path), row_id, hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ", ".join(part for part in (f"row id {self.row_id}" if self.row_id is not None else None, self.path) if part)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} Hint: {self.hint}" if self.hint else text

    def for_row(self, row_id: object) -> SampleReadError:
        """The same error, naming the table row the file belongs to."""
        return SampleReadError(self.message, path=self.path, row_id=row_id, hint=self.hint)

    def __reduce__(self):
        # keeps the fields when the error travels from a DataLoader worker (default pickling would pass only the text)
        return _restore_error, (type(self), self.args, self.__dict__)


def _restore_error(cls: type, args: tuple, fields: dict) -> Exception:
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


def extension_of(path: str | Path) -> str:
    """The lower-cased extension, with ``.nii.gz`` as one extension."""
    name = os.path.basename(os.fspath(path)).lower()  # (os.path: pathlib costs microseconds a sample)
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def read_raw(path: str | Path, channels: int | None = None) -> np.ndarray:
    """A sample as a channels-first array in its stored dtype (native byte order).

    Images: grayscale -> (1, H, W), colour -> (3, H, W). Alpha is dropped (RGBA -> RGB, LA -> L),
    palette and other colour modes (P, CMYK, YCbCr...) become RGB, 1-bit becomes 0/255 uint8;
    8-bit stays uint8 and 16-bit (I;16, I;16B, or I within 0..65535) becomes uint16, 32-bit float
    (F) stays float32; multi-page files are refused. ``channels`` 1 converts colour with Pillow's
    luminance (``convert('L')``), 3 repeats a grey channel.
    NIfTI: (X, Y, Z) -> (1, X, Y, Z), (X, Y, Z, C) -> (C, X, Y, Z); values scaled by the header's
    scl_slope/scl_inter come out as float32. ``.npy``: as stored (it should be channels first),
    read without pickle so that no file can run code. For volumes and arrays ``channels`` only
    repeats a single channel; other channel counts must match.
    """
    ext = extension_of(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise SampleReadError(
            f"unsupported file type {ext or '(no extension)'!r}.", path=path, hint=f"supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    try:
        if ext in IMAGE_EXTENSIONS:
            array = _read_image(path, channels)
        else:
            array = _match_channels(_read_nifti(path) if ext in NIFTI_EXTENSIONS else _read_npy(path), channels, path)
    except SampleReadError:
        if not os.path.isfile(path):  # looked at only when reading failed: a stat per sample costs more than the check is worth
            raise SampleReadError("is a directory, not a file." if os.path.isdir(path) else "file not found.", path=path, hint="check the path.") from None
        raise
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise SampleReadError(f"holds {bad} NaN or Inf value(s).", path=path, hint="fix the file, or drop its row from the table.")
    return array


DIVISORS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}  # integer samples as float: x / divisor (`mdn pack` stores it)


def to_float(array: np.ndarray) -> torch.Tensor:
    """float32 in the range a model expects: uint8 / 255 and uint16 / 65535; other numbers as they are."""
    divisor = DIVISORS.get(array.dtype)
    if divisor is not None:
        out = array.astype(np.float32)
        out /= divisor  # in place: one float copy of the sample, not two
        return torch.from_numpy(out)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def read_sample(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """``read_raw`` as a float32 tensor (see ``to_float``)."""
    return to_float(read_raw(path, channels))


_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _read_image(path: str | Path, channels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as file:  # one read: Pillow's many small reads of a file cost more than of memory
            data = io.BytesIO(file.read())
        image = Image.open(data)  # (Pillow's bomb warning, for images over its own limit: the CLI mutes it)
        with image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise SampleReadError(f"has {frames} frames; expected a single image.", path=path, hint="store volumes as NIfTI (.nii.gz) or .npy.")
            width, height = image.size
            _check_size(width * height * len(image.getbands()), f"{width}x{height}", path)
            return _image_array(image, image.mode, channels, path)  # decoded here, by numpy's read of the pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, SampleReadError):
            raise
        raise SampleReadError(f"cannot be read as an image ({exc}).", path=path, hint="the file may be truncated or not an image; re-export it.") from None


def _image_array(image, mode: str, channels: int | None, path: str | Path) -> np.ndarray:
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image)
        if mode == "I" and (array.min(initial=0) < 0 or array.max(initial=0) > 65535):
            raise SampleReadError("has 32-bit integer pixels outside the 16-bit range.", path=path, hint="store it as 16-bit or as .npy.")
        return _match_channels(array.astype(np.uint16)[None], channels, path)
    if mode == "F":
        return _match_channels(np.asarray(image, dtype=np.float32)[None], channels, path)
    wanted = "L" if channels == 1 or (channels is None and mode in ("1", "L", "LA")) else "RGB"
    pixels = np.array(image if mode == wanted else image.convert(wanted))  # a writable copy (Pillow hands over read-only bytes)
    return pixels[None] if wanted == "L" else np.ascontiguousarray(pixels.transpose(2, 0, 1))


_NIFTI_HEADER_BYTES = 540  # NIfTI-2's (NIfTI-1's is 348): the most a header can take
_GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(data: bytes) -> Callable[[int], bytes]:
    """``read(n)``: the next (up to) n bytes of the gzip stream ``data``, every member, decompressed by zlib in one call.

    nibabel's own reader streams through Python's ``gzip`` module, which costs a third more on
    a small volume; bounding each read keeps a file that inflates far beyond its header's size
    from taking memory. Padding after the last member is ignored, as ``gzip`` does.
    """
    inflater, pending = zlib.decompressobj(wbits=31), data

    def read(n: int) -> bytes:
        nonlocal inflater, pending
        parts = []
        while n > 0 and pending:
            part = inflater.decompress(pending, n)
            parts.append(part)
            n -= len(part)
            if inflater.eof:
                pending = inflater.unused_data if inflater.unused_data.startswith(_GZIP_MAGIC) else b""
                inflater = zlib.decompressobj(wbits=31)
            else:
                pending = inflater.unconsumed_tail
                if not part:
                    break
        return b"".join(parts)

    return read


def _read_nifti(path: str | Path) -> np.ndarray:
    """A NIfTI-1 or NIfTI-2 volume (``.nii`` or ``.nii.gz``): the header first, its size checked, then just the data it declares."""
    import nibabel as nib
    from nibabel.arrayproxy import ArrayProxy
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        with open(path, "rb") as file:
            read = _gunzip(file.read()) if extension_of(path) == ".nii.gz" else file.read
            head = read(_NIFTI_HEADER_BYTES)
            header_class = next((cls for cls in (nib.Nifti1Header, nib.Nifti2Header)
                                 if head[:4] in (cls.sizeof_hdr.to_bytes(4, "little"), cls.sizeof_hdr.to_bytes(4, "big"))), None)  # fmt: skip
            if header_class is None:
                raise ImageFileError("no NIfTI-1 or NIfTI-2 header")
            header = header_class(binaryblock=head[: header_class.sizeof_hdr])
            shape = header.get_data_shape()
            values = int(np.prod(shape, dtype=np.int64))
            _check_size(values, "x".join(map(str, shape)), path)
            stored = header.get_data_dtype()
            end = int(header.get_data_offset()) + values * stored.itemsize
            data = head + read(max(0, end - len(head)))
        array = np.asanyarray(ArrayProxy(io.BytesIO(data), header, mmap=False))  # nibabel's scaling and data order
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise SampleReadError(f"cannot be read as NIfTI ({exc}).", path=path, hint="the file may be truncated or not NIfTI; re-export it.") from None
    if array.ndim == 3:
        array = array[None]
    elif array.ndim == 4:
        array = np.moveaxis(array, 3, 0)
    else:
        raise SampleReadError(
            f"is a {array.ndim}D NIfTI of shape {array.shape}; expected a 3D volume (X, Y, Z) or 4D (X, Y, Z, C) with channels last.",
            path=path,
            hint="store 2D images as PNG/TIFF or .npy (C, H, W)." if array.ndim < 3 else "split it into one file per volume.",
        )
    if array.dtype != stored:  # nibabel applied scl_slope/scl_inter, in float64
        array = array.astype(np.float32)
    return _native(array)


def _read_npy(path: str | Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SampleReadError(f"cannot be read as .npy ({exc}).", path=path, hint="save it with numpy.save from a numeric array.") from None
    if array.dtype.kind not in "biuf" or array.ndim == 0:
        raise SampleReadError(f"holds a {array.ndim}D array of dtype {array.dtype}; expected numbers, channels first.", path=path, hint="save a numeric (C, H, W) or (C, X, Y, Z) array.")
    return _native(array)


def _check_size(values: int, size: str, path: str | Path) -> None:
    if values > MAX_SAMPLE_VALUES:
        raise SampleReadError(f"declares a size of {size} ({values:,} values), more than one sample may hold ({MAX_SAMPLE_VALUES:,}).", path=path,
                              hint="downsample the file, or check that it is not damaged.")


def _native(array: np.ndarray) -> np.ndarray:
    """Contiguous, writable and in native byte order, as torch.from_numpy needs."""
    return np.require(array, dtype=array.dtype.newbyteorder("="), requirements=["C", "W"])


def _match_channels(array: np.ndarray, channels: int | None, path: str | Path) -> np.ndarray:
    if channels is None or array.shape[0] == channels:
        return array
    if array.shape[0] == 1:
        return np.repeat(array, channels, axis=0)
    raise SampleReadError(f"has {array.shape[0]} channels; {channels} were asked for.", path=path, hint="only a single channel can be repeated; convert the file or change the channel count.")


def file_names(ids) -> list[str]:
    """The ids as file names, refused unless distinct and safe (letters, digits, . _ -)."""
    names = [str(value) for value in ids]
    bad = [name for name in names if not FILE_NAME.fullmatch(name) or name in (".", "..")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"ids must be distinct and safe as file names (letters, digits, . _ -); e.g. {bad[:3] or 'duplicates'}")
    return names


def write_image_study(out_dir: str | Path, images: np.ndarray, table: pd.DataFrame, fmt: str, id_column: str = "id") -> pd.DataFrame:
    """One file per row in ``out_dir/files/<id>.png|.nii.gz``; the table with a ``path`` column (relative to out_dir).

    ``images`` is float, (n, C, H, W) with C 1 or 3 for PNG, (n, C, X, Y, Z) for NIfTI. PNG stores
    8 bits: every image is mapped to 0..255 with one min and max over the whole array (not per
    image, so that intensities stay comparable between images, as the synthetic set's factors
    are intensities), rounded; a constant array becomes 0. NIfTI keeps float32 values, identity
    affine, channels last (3D when C is 1), so ``read_raw`` gives back (C, X, Y, Z).
    """
    if fmt not in ("png", "nifti"):
        raise ValueError(f"fmt must be 'png' or 'nifti', not {fmt!r}")
    import nibabel as nib
    from PIL import Image

    spatial = 2 if fmt == "png" else 3
    if images.ndim != spatial + 2 or len(images) != len(table):
        raise ValueError(f"{fmt} needs images of shape (n, C, {'H, W' if spatial == 2 else 'X, Y, Z'}) with n = {len(table)} table rows; got {images.shape}")
    if fmt == "png" and images.shape[1] not in (1, 3):
        raise ValueError(f"PNG stores 1 or 3 channels; the images have {images.shape[1]}")
    names = file_names(table[id_column])
    files = Path(out_dir) / "files"
    files.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if fmt == "png" else ".nii.gz"
    if fmt == "png":
        low, high = float(images.min()), float(images.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        for name, image in zip(names, images):
            pixels = np.round((image - low) * scale).astype(np.uint8)
            Image.fromarray(pixels[0] if len(pixels) == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(files / f"{name}{suffix}")
    else:
        for name, volume in zip(names, images.astype(np.float32)):
            data = volume[0] if len(volume) == 1 else np.moveaxis(volume, 0, 3)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(files / f"{name}{suffix}"))
    out = table.copy()
    out["path"] = [f"files/{name}{suffix}" for name in names]
    return out
