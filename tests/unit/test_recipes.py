"""catalog.recipes: the bundled recipes load; a bad recipe names its file and the field."""
import pytest

from catalog.recipes import RecipeError, list_recipes, load_recipe, parse_recipe


def test_bundled_recipes_load():
    assert set(list_recipes()) >= {"dwani", "dwani-llm-pair", "h200x8-tp8", "h200x8-two-70b-tp4",
                                   "h200x8-eight-8b", "h200x8-hybrid"}
    dwani = load_recipe("dwani")
    assert [i.name for i in dwani.instances] == ["gemma", "qwen3"]
    # the dwani.ai table: 4 + 4.5 + 5 + 9 + 1.4 + 2.5 GB of services (+ 18 + 32 GB of LLMs = 76.4 GB)
    assert sum(s.vram_gb for s in dwani.services) == pytest.approx(26.4)
    eight = load_recipe("h200x8-eight-8b")
    assert sorted(g for i in eight.instances for g in i.gpu_list) == list(range(8))
    assert load_recipe("h200x8-tp8").instances[0].tp == 8
    assert load_recipe("h200x8-hybrid").gpus_used() == 8


def _one(**inst):
    return {"name": "r", "instances": [{"name": "a", "model": "Qwen/Qwen3-0.6B", **inst}]}


def test_bad_recipes_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: r\ninstances:\n  - {name: a, model: Qwen/Qwen3-0.6B, tp: 0}\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: instances\[0\]\.tp: Input should be greater than or equal"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"instances\[0\]\.gpu_memory: Extra inputs"):
        parse_recipe(_one(gpu_memory=0.5))
    with pytest.raises(RecipeError, match=r"instances\[0\].model: unknown model 'Qwen/Qwen3-06B'"):
        parse_recipe(_one(model="Qwen/Qwen3-06B"))
    with pytest.raises(RecipeError, match="tp x dp = 2"):
        parse_recipe(_one(tp=2, gpus=[0]))
    with pytest.raises(RecipeError, match="share is a share of one GPU"):
        parse_recipe(_one(tp=2, share=0.5))
    with pytest.raises(RecipeError, match="names must be unique"):
        parse_recipe({"name": "r", "instances": [{"name": "a", "model": "Qwen/Qwen3-0.6B"}],
                      "services": [{"name": "a", "kind": "tts", "model": "x", "vram_gb": 1}]})
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "notyaml.yaml").write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "notyaml.yaml")


def test_defaults():
    r = parse_recipe(_one(tp=2))
    assert r.instances[0].gpu_list == [0, 1] and r.instances[0].memory_fraction is None
    assert parse_recipe(_one(share=0.3)).instances[0].memory_fraction == 0.3
