# Draw a Sound with its TextGrid to a PNG (docs/make_phonetician_pictures.sh). With no TextGrid file
# given, the TextGrid is made by the ZIPA plugin's "align interval text" command: one utterance
# interval over the sound holding Text (orthography in Language), aligned by the zipa command.
form Draw
    sentence Sound_file
    sentence TextGrid_file
    sentence Png_file
    sentence Zipa_command zipa
    sentence Model
    sentence Text
    sentence Language en-us
endform
sound = Read from file: sound_file$
if textGrid_file$ = ""
    grid = To TextGrid: "utterances", ""
    Set interval text: 1, 1, text$
    selectObject: sound, grid
    runScript: "../../praat/plugin_zipa/zipa_align.praat", zipa_command$, model$, "utterances", language$, "phones", "words"
    grid = selected ("TextGrid")
else
    grid = Read from file: textGrid_file$
endif
Erase all
Font size: 12
Select outer viewport: 0, 9, 0, 4.5
selectObject: sound, grid
Draw: 0, 0, "yes", "yes", "yes"
Save as 300-dpi PNG file: png_file$
