"""The fake Hub itself (tests/fake_hub.py): it installs and restores everything, and its store survives a dump."""

import os

import pytest
from fake_hub import FakeHub
from hub_fixtures import one_torch_thread, private_tempdir_fixture  # noqa: F401  (autouse fixtures)


def test_fake_hub_install_restores_everything(tmp_path):
    import datasets.config
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    def state():
        return (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
                constants.HF_HUB_CACHE, datasets.config.HF_ENDPOINT, datasets.config.HF_HUB_OFFLINE,
                huggingface_hub.hf_api.api.endpoint, _http._GLOBAL_CLIENT_FACTORY, os.environ.get("HF_TOKEN"),
                os.environ.get("HF_HUB_OFFLINE"))

    before = state()
    hub = FakeHub()
    with hub.install(cache_dir=tmp_path):
        assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (
            hub.endpoint, False, False)
        huggingface_hub.create_repo("org/module-level-api")  # the module-level HfApi is redirected as well
    assert hub.repo_exists("org/module-level-api") and state() == before


def test_fake_hub_store_survives_dump_and_load(tmp_path):
    hub = FakeHub()
    hub.add_commit("org/m", {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}, message="first")
    hub.add_commit("org/d", {"data.tar": b"tar"}, repo_type="dataset")
    loaded = FakeHub.load(hub.dump(tmp_path / "store"))
    assert loaded.files("org/m") == {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}
    assert loaded.files("org/d", "dataset") == {"data.tar": b"tar"} and loaded.commits("org/m")[0].message == "first"
    with pytest.raises(ValueError, match="unknown fake-hub route 'push'"):
        hub.fail("push")


def test_fake_hub_answers_whoami_auth_check_and_delete_as_the_hub(tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    hub = FakeHub()
    with hub.install(cache_dir=tmp_path):
        api = HfApi()
        me = api.whoami()
        assert (me["name"], [o["name"] for o in me["orgs"]], me["auth"]["accessToken"]["role"]) == (
            "me", ["org"], "write")
        with pytest.raises(RepositoryNotFoundError):
            api.auth_check("org/new", write=True)
        api.create_repo("org/new")
        api.auth_check("org/new", write=True)
        with pytest.raises(HfHubHTTPError, match="403"):  # not a namespace of the token's user
            api.create_repo("someone/new")
        hub.add_commit("someone/theirs", {"a.txt": b"a"})
        with pytest.raises(HfHubHTTPError, match="403"):
            api.auth_check("someone/theirs", write=True)
        api.auth_check("someone/theirs")  # readable
        hub.role = "read"
        with pytest.raises(HfHubHTTPError, match="403"):
            api.create_repo("org/other")
        hub.role = "write"
        api.delete_repo("org/new")
    assert not hub.repo_exists("org/new") and not hub.repo_exists("someone/new")
