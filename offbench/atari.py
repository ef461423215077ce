"""The Atari pixel protocol: the env, its preprocessing, and the human-normalised score.

The protocol of discrete BCQ's reference code (shared/specs/discrete_bcq.md, "Evaluation protocol
details"), which is also how the DQN Replay Dataset was recorded (Dopamine's Atari settings), on
Gymnasium's `ALE/<Game>-v5` through ale-py (ROMs ship in its wheel):

    env kwargs    frameskip=1 (the wrapper skips), repeat_action_probability=0.25 (sticky actions, as
                  gym's v0 ids), full_action_space=False (the game's minimal action set)
    wrapper       gymnasium's AtariPreprocessing: frame skip 4 with a max over the last two frames,
                  84x84 grayscale (ALE's grayscale screen, INTER_AREA resize), no no-op starts, life
                  loss not terminal; then FrameStackObservation: 4 frames, oldest first, zeros before
                  the episode's first frame (the frame-stack sampler's padding); then a cap of 27,000
                  agent steps (108,000 frames), a time-out (truncation), never a termination
    rewards       the env's, unclipped: clipping to [-1, 1] is the algorithm's, for learning only
                  (`clip_rewards`), and scores come from unclipped returns

Scores are human-normalised, 100 * (R - random) / (human - random), with the per-game random and human
returns of `HUMAN_RANDOM` (DeepMind's dqn_zoo). Those returns were measured with up to 30 no-op starts
and without sticky actions, so scores under this protocol are comparable in scale, not exactly.

Minari's `atari/*` datasets were recorded differently (ALE v5 with its internal frameskip 4, no max
pooling, no sticky actions, raw 210x160 RGB frames, which Minari >= 0.5 stores as JPEG); `minari_frame`
turns such a frame into the 84x84 grayscale frame offbench stores, and the `atari-minari` wrapper
(`atari-minari-jpeg`: after the same JPEG round trip) applies it to the env that evaluates them, so a
policy sees at evaluation what it learned from.

Everything that needs ale-py or OpenCV imports them on use: a missing `offbench[atari]` extra is one
`OffbenchError` line saying how to install it (`require_atari`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from offbench.data.spaces import Discrete
from offbench.errors import OffbenchError

INSTALL_HINT = "pip install 'offbench[atari]' (ale-py and opencv-python-headless)"
ENV_VERSION = "v5"
FRAME_SKIP = 4  # agent steps repeat the action on 4 emulator frames (spec; Dopamine's AtariPreprocessing)
SCREEN_SIZE = 84  # frames are 84x84 grayscale (spec)
FRAME_STACK = 4  # observations are the last 4 frames (spec)
STICKY_ACTIONS = 0.25  # repeat_action_probability of gym's v0 ids, which the reference code used (spec)
MAX_EPISODE_STEPS = 27_000  # agent steps, 108,000 frames (the reference code's max_episode_timesteps)
PIXEL_ENV_KWARGS = {"frameskip": 1, "repeat_action_probability": STICKY_ACTIONS, "full_action_space": False}
PIXEL_WRAPPERS = ("atari-pixels",)
MINARI_WRAPPERS = ("atari-minari",)
MINARI_JPEG_WRAPPERS = ("atari-minari-jpeg",)  # Minari >= 0.5 stores image observations as JPEG (PIL, default quality)

# Random and human returns on Atari-57 (random, human): DeepMind's dqn_zoo, dqn_zoo/atari_data.py
# (Apache 2.0), the table of the DQN line of work: means of at least 3 episodes each, episodes starting
# after 1-30 no-op actions, capped at 108,000 frames; no sticky actions.
HUMAN_RANDOM_SOURCE = ("dqn_zoo/atari_data.py (DeepMind): random and human returns of Atari-57, measured with up to 30 no-op starts "
                       "and no sticky actions; this protocol has sticky actions and no no-op starts, so scores are comparable in scale, not exactly")
HUMAN_RANDOM: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0), "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7), "atlantis": (12850.0, 29028.1), "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5), "berzerk": (123.7, 2630.4), "bowling": (23.1, 160.7), "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5), "centipede": (2090.9, 12017.0), "chopper_command": (811.0, 7387.8), "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9), "demon_attack": (152.1, 1971.0), "double_dunk": (-18.6, -16.4), "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7), "freeway": (0.0, 29.6), "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4), "hero": (1027.0, 30826.4), "ice_hockey": (-11.2, 0.9), "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5), "kung_fu_master": (258.5, 22736.3), "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6), "name_this_game": (2292.3, 8049.0), "phoenix": (761.4, 7242.6), "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6), "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0), "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0), "robotank": (2.2, 11.9), "seaquest": (68.4, 42054.7), "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7), "space_invaders": (148.0, 1668.7), "star_gunner": (664.0, 10250.0), "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3), "time_pilot": (3568.0, 5229.2), "tutankham": (11.4, 167.6), "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5), "video_pinball": (16256.9, 17667.9), "wizard_of_wor": (563.5, 4756.5), "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}


def require_atari() -> None:
    """Import ale-py (registering the `ALE/*` envs with Gymnasium) and OpenCV; raises one-line `OffbenchError` when missing."""
    try:
        import ale_py
        import cv2  # noqa: F401  (AtariPreprocessing and the Minari frame conversion resize with OpenCV)
    except ImportError as error:
        raise OffbenchError(f"Atari needs the atari extra ({error.name} is not installed)", INSTALL_HINT) from None
    gym.register_envs(ale_py)


def register_if_atari(env_id: str) -> None:
    """Register ale-py's envs before an `ALE/...` id is made (a missing extra is one error line); nothing for other ids."""
    if env_id.startswith("ALE/"):
        require_atari()


def env_id(game: str) -> str:
    """`pong` -> `ALE/Pong-v5`, `space_invaders` -> `ALE/SpaceInvaders-v5` (the game's ROM name in CamelCase)."""
    return f"ALE/{camel_case(game)}-{ENV_VERSION}"


def camel_case(game: str) -> str:
    """`space_invaders` -> `SpaceInvaders`: how ALE's env ids and the DQN Replay Dataset's folders name a game."""
    return "".join(part.capitalize() for part in game.split("_"))


def action_space(game: str) -> Discrete:
    """The minimal action set of `game` under the pixel protocol (`ALE/<Game>-v5`, full_action_space=False)."""
    require_atari()
    env = gym.make(env_id(game), **PIXEL_ENV_KWARGS)
    try:
        return Discrete(int(env.action_space.n))
    finally:
        env.close()


def human_normalized(game: str) -> tuple[float, float, str]:
    """(random, human, source) for `game` (a ROM name such as `pong`); raises `OffbenchError` for a game the table lacks."""
    if game not in HUMAN_RANDOM:
        raise OffbenchError(f"no human/random reference returns for Atari game '{game}'", f"known games: {', '.join(HUMAN_RANDOM)}")
    random, human = HUMAN_RANDOM[game]
    return random, human, f"atari:{game}: {HUMAN_RANDOM_SOURCE}"


def pixel_wrappers(env: gym.Env) -> gym.Env:
    """The pixel protocol around an `ALE/<Game>-v5` env made with `PIXEL_ENV_KWARGS` (see the module docstring).

    Observations: (4, 84, 84) uint8, oldest frame first, zeros before the episode's first frame.
    """
    require_atari()
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit

    env = AtariPreprocessing(env, noop_max=0, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE, terminal_on_life_loss=False,
                             grayscale_obs=True, scale_obs=False)
    return TimeLimit(FrameStackObservation(env, FRAME_STACK, padding_type="zero"), MAX_EPISODE_STEPS)


def minari_frame(rgb: np.ndarray) -> np.ndarray:
    """A raw ALE RGB frame (210, 160, 3) uint8 -> the stored frame (84, 84) uint8: OpenCV's RGB-to-gray, then INTER_AREA resize."""
    require_atari()
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (SCREEN_SIZE, SCREEN_SIZE), interpolation=cv2.INTER_AREA)


def jpeg_round_trip(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame as Minari stores and reads it back when its dataset is JPEG-encoded: PIL's JPEG at its default quality, decoded."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.uint8)


def minari_wrappers(env: gym.Env, jpeg: bool = False) -> gym.Env:
    """The evaluation env of a Minari Atari dataset: its RGB frames through `minari_frame` (after Minari's JPEG
    round trip when the dataset stores JPEG), stacked as the sampler stacks them.

    The env is the dataset's own (its env spec: internal frameskip, no sticky actions, its episode cap);
    observations become (4, 84, 84) uint8, oldest first, zeros before the episode's first frame.
    """
    require_atari()
    from gymnasium.wrappers import FrameStackObservation, TransformObservation

    space = gym.spaces.Box(0, 255, (SCREEN_SIZE, SCREEN_SIZE), np.uint8)
    convert = (lambda rgb: minari_frame(jpeg_round_trip(rgb))) if jpeg else minari_frame
    return FrameStackObservation(TransformObservation(env, convert, space), FRAME_STACK, padding_type="zero")


def minari_jpeg_wrappers(env: gym.Env) -> gym.Env:
    """`minari_wrappers` for a dataset whose frames Minari stored as JPEG."""
    return minari_wrappers(env, jpeg=True)


def make_pixel_env(game: str, **kwargs) -> gym.Env:
    """One `ALE/<Game>-v5` env under the pixel protocol (`kwargs` go to `gym.make`, e.g. render_mode)."""
    require_atari()
    return pixel_wrappers(gym.make(env_id(game), **PIXEL_ENV_KWARGS, **kwargs))
