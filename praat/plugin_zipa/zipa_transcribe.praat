# ZIPA: transcribe the selected Sound to a TextGrid with a phone tier and a word tier (IPA), by
# `zipa align` without a transcript (free transcription with times).
include zipa_common.praat

form ZIPA: transcribe to TextGrid
    comment The zipa command (a full path, or e.g. "python -m zipa"):
    sentence Zipa_command zipa
    comment Model: a name from `zipa models`, a .pth file or a folder
    sentence Model zipa-cr-small-300k
    comment Language (restricts the phones to its inventory: eng, en-us, cmn...) or an inventory file; empty: none
    sentence Language_or_inventory
    word Phone_tier phones
    word Word_tier words
endform

sound = selected ("Sound")
name$ = selected$ ("Sound")
@zipaSaveSound: sound
@zipaLanguageArguments: language_or_inventory$
@zipaRun: zipa_command$, "-m """ + model$ + """" + zipaLanguageArguments.result$
@zipaNameTiers: phone_tier$, word_tier$
selectObject: zipa.textgrid
Rename: name$
