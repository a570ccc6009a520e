"""Videos of the agent playing: the envs' own 64x64 observations, upscaled by nearest
neighbour and tiled in a grid, written with PyAV (its bundled FFmpeg).

- ``.mp4`` (and ``.mkv``/``.mov``): H.264 through libx264 when PyAV's FFmpeg has it (the
  wheels do), else MPEG-4 part 2; yuv420p, so the frame is padded to even sizes.
- ``.gif``: PyAV's GIF encoder on a fixed 256-colour palette (3 bits red, 3 green, 2 blue);
  coarse colours, fine for ProcGen's flat graphics.

One video frame per recorded env step, so a video of S steps has exactly S frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".gif")


def pick_codec(extension: str) -> str:
    """The encoder for a file extension: gif, else libx264 if available, else mpeg4."""
    if extension.lower() == ".gif":
        return "gif"
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
    raise RuntimeError("PyAV's FFmpeg has neither libx264 nor mpeg4")


def tile_frames(
    frames: np.ndarray, scale: int = 4, cols: int | None = None, gap: int = 2
) -> np.ndarray:
    """frames [N, H, W, 3] uint8 -> one image [rows*(H*scale+gap)-gap, ...] with the N frames
    upscaled by nearest neighbour and laid out row by row (empty cells black)."""
    n, h, w, c = frames.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    big = frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames
    th, tw = h * scale, w * scale
    out = np.zeros((rows * (th + gap) - gap, cols * (tw + gap) - gap, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[r * (th + gap): r * (th + gap) + th, k * (tw + gap): k * (tw + gap) + tw] = big[i]
    return out


def _palette_bgra() -> np.ndarray:
    r, g, b = np.meshgrid(np.arange(8), np.arange(8), np.arange(4), indexing="ij")
    rgb = np.stack([r * 255 // 7, g * 255 // 7, b * 255 // 3], axis=-1).reshape(256, 3)
    return np.concatenate(
        [rgb[:, ::-1], np.full((256, 1), 255)], axis=1
    ).astype(np.uint8)  # PyAV's pal8 palette is BGRA


def _to_pal8(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(np.uint16) for i in range(3))
    r3, g3, b2 = (r * 7 + 127) // 255, (g * 7 + 127) // 255, (b * 3 + 127) // 255
    return (r3 << 5 | g3 << 2 | b2).astype(np.uint8)


class VideoWriter:
    """Streams tiled frames of selected envs to a video file.

    ``add(obs [N, 64, 64, 3], step) -> bool`` appends one frame (the envs ``env_indices``)
    and returns whether more frames are wanted (False once ``max_steps`` frames are written).
    Call ``close()`` to flush; ``frames`` counts the frames written.
    """

    def __init__(
        self,
        path: str | Path,
        env_indices: list[int],
        *,
        max_steps: int,
        scale: int = 4,
        fps: int = 15,
    ) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in VIDEO_EXTENSIONS:
            raise ValueError(
                f"unsupported video extension {ext or '(none)'!r} in {str(path)!r}; valid: "
                + ", ".join(VIDEO_EXTENSIONS)
            )
        self.env_indices = list(env_indices)
        self.max_steps = int(max_steps)
        self.scale = int(scale)
        self.fps = int(fps)
        self.codec = pick_codec(ext)
        self.frames = 0
        self._container = None
        self._stream = None
        self._palette = _palette_bgra()

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "pal8" if self.codec == "gif" else "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        self._stream = stream

    def add(self, obs: np.ndarray, step: int = 0) -> bool:
        if self.frames >= self.max_steps:
            return False
        img = tile_frames(np.asarray(obs)[self.env_indices], scale=self.scale)
        if self.codec != "gif":  # yuv420p needs even sizes
            img = np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0)))
        if self._container is None:
            self._open(img.shape[0], img.shape[1])
        if self.codec == "gif":
            frame = av.VideoFrame.from_ndarray((_to_pal8(img), self._palette), format="pal8")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        return self.frames < self.max_steps

    def __call__(self, obs: np.ndarray, step: int = 0) -> bool:
        return self.add(obs, step)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


def count_frames(path: str | Path) -> int:
    """Decode a video with PyAV and count its frames."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
