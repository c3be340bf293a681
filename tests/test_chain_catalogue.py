"""Chains in the catalogue (`family = "chain"`): their steps checked against the models they name, and shown."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stemsplit.catalogue import CATALOGUE, read_catalogue
from stemsplit.chain_steps import ChainStep, lay_out, parse_then
from stemsplit.cli import main
from stemsplit.errors import ModelError

KIM, KARAOKE, DEREVERB = "mel_band_roformer_kim", "mel_band_roformer_karaoke_aufr33_viperx", "uvr_vr_deecho_dereverb"


def test_the_karaoke_chain_gives_the_stems_it_lists_from_the_models_it_names():
    info = read_catalogue()["vocals_lead_backing_dereverb"]
    assert info.is_chain and info.card.job == "karaoke" and info.licence.startswith("those of its steps")
    assert [step.model for step in info.steps] == [KIM, KARAOKE, DEREVERB]
    assert [step.stem for step in info.steps] == [None, "vocals", "lead"]
    assert info.stems == ("lead_dry", "lead_reverb", "backing", "instrumental")
    files = {file.name for model in (KIM, KARAOKE, DEREVERB) for file in read_catalogue()[model].files}
    assert {file.name for file in info.weight_files} == files


def test_models_shows_a_chain_with_its_steps():
    result = CliRunner().invoke(main, ["models", "vocals_lead_backing_dereverb"], env={"HF_HUB_OFFLINE": "1"})
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and lines[0] == ("vocals_lead_backing_dereverb: karaoke: lead_dry, lead_reverb, "
                                                  "backing, instrumental")
    at = lines.index("  steps:")
    assert lines[at + 1:at + 4] == [
        f"    step 1: {KIM} on the song (no_vocals as instrumental)",
        f"    step 2: {KARAOKE} on the vocals (lead as lead, backing as backing)",
        f"    step 3: {DEREVERB} on the lead (no_reverb as lead_dry, reverb as lead_reverb)"]
    listed = json.loads(CliRunner().invoke(main, ["models", "--json", "vocals_lead_backing_dereverb"]).stdout)
    assert listed["kind"] == f"chain of {KIM}, then {KARAOKE} on the vocals, then {DEREVERB} on the lead"


def chain_entry(stems: list[str], steps: list[str], extra: str = "") -> str:
    return (f'\n[my_chain]\nfamily = "chain"\ndescription = "d"\nlicence = "l"\nstems = {json.dumps(stems)}\n'
            f'steps = [{", ".join(steps)}]\n{extra}')


@pytest.mark.parametrize("stems, steps, problem", [
    (["vocals.vocals", "vocals.no_vocals", "no_vocals"], [f'{{ model = "{KIM}" }}', '{ model = "nowhere", '
                                                          'stem = "vocals" }'], "step nowhere is not a model"),
    (["a"], [f'{{ model = "{KIM}" }}', f'{{ model = "{KARAOKE}", stem = "drums" }}'],
     "step 2 takes a stem 'drums' that the chain does not have before it; it has vocals, no_vocals"),
    (["a"], [f'{{ model = "{KIM}" }}', '{ model = "vocals_lead_backing_dereverb", stem = "vocals" }'],
     "is a chain; chains do not nest"),
    (["a"], [f'{{ model = "{KIM}" }}'] + [f'{{ model = "{KIM}", stem = "no_vocals" }}'] * 8, "2 to 8 steps, not 9"),
    (["a"], [f'{{ model = "{KIM}" }}', f'{{ model = "{KARAOKE}" }}'], "step 2 .* needs the stem it separates"),
    (["a"], [f'{{ model = "{KIM}", stem = "vocals" }}', f'{{ model = "{KARAOKE}", stem = "vocals" }}'],
     "the first step separates the song"),
    (["a"], [f'{{ model = "{KIM}", names = {{ piano = "p" }} }}', f'{{ model = "{KARAOKE}", stem = "vocals" }}'],
     "step 1 names a stem 'piano' that mel_band_roformer_kim does not give"),
    (["a"], [f'{{ model = "{KIM}", names = {{ vocals = "x" }} }}',
             f'{{ model = "{KARAOKE}", stem = "x", names = {{ lead = "no_vocals" }} }}'],
     "two stems named 'no_vocals'"),
    (["vocals.no_vocals", "vocals.vocals", "no_vocals"], [f'{{ model = "{KIM}" }}', f'{{ model = "{KARAOKE}", '
                                                          'stem = "vocals" }'], "its steps give the stems"),
])
def test_a_malformed_chain_is_refused_with_what_is_wrong(tmp_path, stems, steps, problem):
    path = tmp_path / "models.toml"
    path.write_text(CATALOGUE.read_text(encoding="utf-8") + chain_entry(stems, steps), encoding="utf-8")
    with pytest.raises(ModelError, match=f"entry 'my_chain' is malformed: .*{problem}"):
        read_catalogue(path)


def test_an_ensemble_takes_no_stems_from_a_chain(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(CATALOGUE.read_text(encoding="utf-8") + """
[my_ensemble]
description = "d"
licence = "l"
stems = ["lead_dry", "other"]
residual = "other"
parts = [{ model = "vocals_lead_backing_dereverb", stems = ["lead_dry"] }]
""", encoding="utf-8")
    with pytest.raises(ModelError, match="'my_ensemble' is malformed: its part vocals_lead_backing_dereverb is a"):
        read_catalogue(path)


def test_a_chain_needs_its_family_and_steps_and_nothing_of_a_network_model(tmp_path):
    path = tmp_path / "models.toml"
    steps = [f'{{ model = "{KIM}" }}', f'{{ model = "{KARAOKE}", stem = "vocals" }}']
    for extra, problem in [('[[my_chain.files]]\nname = "x.ckpt"\nurls = ["https://e.org/x"]\n', "no files or parts")]:
        path.write_text(CATALOGUE.read_text(encoding="utf-8") + chain_entry(["a"], steps, extra), encoding="utf-8")
        with pytest.raises(ModelError, match=problem):
            read_catalogue(path)
    path.write_text(CATALOGUE.read_text(encoding="utf-8") + chain_entry(["a"], steps).replace(
        'family = "chain"\n', 'family = "htdemucs"\n'), encoding="utf-8")
    with pytest.raises(ModelError, match='a chain has family = "chain" and steps'):
        read_catalogue(path)


def test_the_naming_rule_replaces_a_split_stem_where_it_stood():
    steps = [ChainStep("four"), parse_then("vocals:two"), parse_then(" vocals.lead : two ")]
    layout = lay_out(steps, [["drums", "bass", "other", "vocals"], ["lead", "backing"], ["lead", "backing"]])
    assert layout.names == ["drums", "bass", "other", "vocals.lead.lead", "vocals.lead.backing", "vocals.backing"]
    assert [(placed.step, placed.stem) if placed else None for placed in layout.inputs] == [
        None, (0, "vocals"), (1, "lead")]
    for bad in ("vocals", ":two", "vocals:", ""):
        with pytest.raises(ValueError, match="is not STEM:MODEL"):
            parse_then(bad)
