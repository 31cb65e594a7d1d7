"""app.ui.launch_form: the form's problems, all at once and in plain words."""
from app.ui.launch_form import LaunchValues, form_problems


def test_form_problems_lists_each_typed_field():
    v = LaunchValues(gpu="H100-SXM-80GB", levels="0,-5", input_len="900:100", output_len="x")
    problems = form_problems(v)
    assert [p.split(":")[0] for p in problems] == ["Concurrency levels", "Input length", "Output length"]
    assert problems[1] == "Input length: length range 900:100 has min > max"     # no pydantic dump, no docs link


def test_form_problems_empty_for_a_valid_form_and_rest_from_the_build():
    assert form_problems(LaunchValues(gpu="H100-SXM-80GB")) == []
    assert form_problems(LaunchValues(gpu=None)) == ["GPU: the simulator needs a catalog GPU to emulate"]
