# ZIPA: align the text of each interval of a TextGrid tier (utterances) with the selected Sound, by
# `zipa align --textgrid`; the result is a copy of the TextGrid with a phone tier and a word tier added.
include zipa_common.praat

form ZIPA: align interval text
    comment The zipa command (a full path, or e.g. "python -m zipa"):
    sentence Zipa_command zipa
    comment Model: a name from `zipa models`, a .pth file or a folder
    sentence Model zipa-cr-small-300k
    word Utterance_tier utterances
    comment Language of the text (orthography, converted by G2P: en-us, fr, cmn...); empty: the text is IPA
    sentence Language
    word Phone_tier phones
    word Word_tier words
endform

sound = selected ("Sound")
grid = selected ("TextGrid")
name$ = selected$ ("TextGrid")
@zipaSaveSound: sound
selectObject: grid
Save as text file: zipa.folder$ + "/in.TextGrid"
arguments$ = "-m """ + model$ + """ --textgrid """ + zipa.folder$ + "/in.TextGrid"" --tier """ + utterance_tier$ + """"
if language$ <> ""
    arguments$ = arguments$ + " --orthographic --lang " + language$
endif
@zipaRun: zipa_command$, arguments$
@zipaNameTiers: phone_tier$, word_tier$
selectObject: zipa.textgrid
Rename: name$ + "_zipa"
