import pytest

from unified.errors import ConfigError, InputError, MediaDecodeError, UnifiedError


def test_hierarchy_and_messages_name_the_input():
    err = MediaDecodeError("video", "clip.mp4", "no video stream")
    assert isinstance(err, InputError) and isinstance(err, UnifiedError) and isinstance(err, ValueError)
    assert str(err) == "video='clip.mp4': no video stream"
    cfg = ConfigError("fusion.mode", "foo", "expected one of xattn, concat, both")
    assert str(cfg) == "config field 'fusion.mode'='foo': expected one of xattn, concat, both"
    assert cfg.field == "fusion.mode"


def test_large_values_are_summarised_not_dumped():
    err = InputError("video", b"\x00" * 10_000, "not a media file")
    assert str(err) == "video=<10000 bytes>: not a media file"
    long = InputError("text", "x" * 1000, "too long")
    assert len(str(long)) < 200
    with pytest.raises(InputError, match="too long"):
        raise long


@pytest.mark.parametrize("error", [InputError("box", (3, 1), "x2 must exceed x1"),
                                   MediaDecodeError("vqa.jsonl:4 video", "clip.mp4", "truncated"),
                                   ConfigError("optim.lr", -1.0, "expected > 0")], ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_whole(error):
    """A DataLoader worker's error crosses to the training process by pickle: same class, fields and message."""
    import pickle

    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error) and back.value == error.value
