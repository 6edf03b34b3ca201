"""BOB step 1: class-agnostic context captions of the real training images."""

from bobjax.errors import StageNotBuiltError


def run(config, workdir: str) -> None:
    del config, workdir
    raise StageNotBuiltError("stage 'caption' is not built yet; run the stages after it with --config.stages=...")
