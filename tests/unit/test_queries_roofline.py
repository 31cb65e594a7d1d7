"""storage.queries.roofline_share: a level of several models shows no roofline share, even one stored with it."""
from storage.queries import roofline_share


def test_roofline_share_of_one_model_and_of_a_mix():
    one = {"roofline": {"share": 0.243}, "instances": {"r0": {"model": "m"}, "r1": {"model": "m"}}}
    assert roofline_share(one) == 0.243                                 # two replicas of one model: meaningful
    assert roofline_share({"roofline": {"share": 0.1}}) == 0.1
    mix = {"roofline": {"share": 0.53}, "instances": {"gemma": {"model": "g"}, "qwen3": {"model": "q"}}}
    assert roofline_share(mix) is None                                  # stored before the sweep stopped computing it
    assert roofline_share({}) is None and roofline_share({"roofline": None}) is None
