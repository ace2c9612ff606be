"""scene_bins auto in the node: the scene a camera's depth uses changes only after a new scene
has won several frames in a row. No torch: the ONNX install loads it too."""

from __future__ import annotations


class SceneHysteresis:
    """The node's scene: a new scene takes over only after winning `frames` consecutive frames
    (the first frame's winner is taken at once). Called by DepthClip.predict with the scene
    names and the frame's probabilities (1, S); `scene` and `score` are what the node reports."""

    def __init__(self):
        self.scene, self.score = None, 0.0
        self._candidate, self._wins = None, 0

    def choose(self, names, scores, frames: int) -> list:
        best = names[int(scores[0].argmax())]
        if best == self.scene:
            self._candidate, self._wins = None, 0
        else:
            self._wins = self._wins + 1 if best == self._candidate else 1
            self._candidate = best
            if self.scene is None or self._wins >= frames:
                self.scene, self._candidate, self._wins = best, None, 0
        self.score = float(scores[0][list(names).index(self.scene)])
        return [self.scene]
