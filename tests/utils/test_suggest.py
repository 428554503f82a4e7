"""m3i_mm.utils.suggest.did_you_mean."""
from m3i_mm.utils.suggest import did_you_mean


def test_close_names_are_suggested_best_first():
    assert did_you_mean('intervl', ['by_epoch', 'interval', 'max_keep_ckpts']) == \
        ' Did you mean: interval?'
    assert did_you_mean('AdamWW', ['SGD', 'Adam', 'AdamW']) == ' Did you mean: AdamW, Adam?'


def test_nothing_close_gives_nothing():
    assert did_you_mean('zzz', ['interval', 'by_epoch']) == ''
