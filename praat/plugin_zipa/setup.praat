# ZIPA plugin for Praat: phone transcription and forced alignment by the `zipa` command.
# Praat runs this file at start-up (it sits in a folder called plugin_zipa in Praat's preferences
# folder); it adds two commands to the dynamic menu (the buttons on the right of the Objects window):
#   Sound selected:              "ZIPA: transcribe to TextGrid..."
#   Sound and TextGrid selected: "ZIPA: align interval text..."
# See README.md in this folder for installation on Linux, macOS and Windows.

Add action command: "Sound", 1, "", 0, "", 0, "ZIPA: transcribe to TextGrid...", "", 0, "zipa_transcribe.praat"
Add action command: "Sound", 1, "TextGrid", 1, "", 0, "ZIPA: align interval text...", "", 0, "zipa_align.praat"
