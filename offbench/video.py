"""Headless video of an evaluation episode: MuJoCo renders off-screen, imageio + ffmpeg write an mp4.

The optional `[video]` extra (`pip install 'offbench[video]'`) brings imageio and imageio-ffmpeg (an ffmpeg
binary in a wheel). Rendering needs no display: when `MUJOCO_GL` is unset it is set to `egl` (a GPU's EGL or
Mesa's); set `MUJOCO_GL=osmesa` for Mesa's software renderer where EGL is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.errors import OffbenchError
from offbench.io import check_output_path

HEADLESS_GL = "egl"
DEFAULT_FPS = 30


def check_video_path(path: Path, force: bool = False) -> Path:
    """The file to write the video to (`offbench.io.check_output_path`), checked before any work.

    Raises one-line `OffbenchError` for a path not ending in .mp4, one `check_output_path` refuses (an existing
    file is replaced only with `force`), and a missing optional dependency.
    """
    if path.suffix.lower() != ".mp4":
        raise OffbenchError(f"--video {path}: the video is written as mp4", "give a path ending in .mp4")
    target = check_output_path(path, "--video", force)
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise OffbenchError("writing a video needs imageio and imageio-ffmpeg", "pip install 'offbench[video]'") from None
    return target


def use_headless_rendering() -> str:
    """Set MUJOCO_GL to the headless EGL renderer unless the user chose one; returns the renderer in use."""
    return os.environ.setdefault("MUJOCO_GL", HEADLESS_GL)


class EpisodeVideo:
    """Renders an environment's rgb_array frames into an mp4 at `path`, opened on the first frame (at the env's fps).

    Use as the `watch_first` hook of `offbench.evaluate.evaluate`; `close()` finishes the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None
        self.frames = 0

    def __call__(self, env: gym.Env) -> None:
        try:
            frame = np.asarray(env.render())
        except Exception as error:  # each GL backend fails its own way (RuntimeError, FatalError, AttributeError ...)
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise OffbenchError(f"rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {message}",
                                "set MUJOCO_GL to a renderer this machine has: egl (libEGL) or osmesa (libOSMesa)") from None
        if self.writer is None:
            import imageio

            fps = env.metadata.get("render_fps") or DEFAULT_FPS
            self.writer = imageio.get_writer(str(self.path), format="FFMPEG", fps=fps, codec="libx264")
        self.writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
