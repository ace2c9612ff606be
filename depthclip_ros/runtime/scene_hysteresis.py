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


class SceneChoice:
    """predict's `scenes` for a batch whose image i is of the camera whose hysteresis is
    `hystereses[i]`: each image takes its camera's scene, in batch order (a camera's frames in
    one batch come in its stamp order). Picklable: a model in another process (the fleet's)
    runs it there and hands it back, and `adopt` takes its cameras' new states here."""

    def __init__(self, hystereses, frames: int):
        self.hystereses, self.frames = list(hystereses), frames

    def __call__(self, names, scores) -> list:
        return [
            hysteresis.choose(names, scores[i : i + 1], self.frames)[0]
            for i, hysteresis in enumerate(self.hystereses)
        ]

    def adopt(self, ran: "SceneChoice") -> None:
        """Take the states of `ran`, this choice as another process ran it."""
        for mine, theirs in zip(self.hystereses, ran.hystereses):
            if mine is not theirs:
                mine.__dict__.update(theirs.__dict__)
