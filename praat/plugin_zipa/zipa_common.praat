# What the ZIPA commands share: running `zipa` on files in a temporary folder and reading its TextGrid back.
# The command's error messages (its stderr) end up in Praat's error window.

# Save the selected Sound as a WAV file in a fresh temporary folder: zipa.folder$, zipa.wav$.
procedure zipaSaveSound: .sound
    zipa.folder$ = temporaryDirectory$ + "/zipa_praat_" + string$(randomInteger(1, 1000000000))
    createFolder: zipa.folder$
    zipa.wav$ = zipa.folder$ + "/sound.wav"
    selectObject: .sound
    Save as WAV file: zipa.wav$
endproc

# --lang CODE, or --inventory FILE when the field names a file ("" when it is empty).
procedure zipaLanguageArguments: .field$
    if .field$ = ""
        .result$ = ""
    elsif fileReadable(.field$)
        .result$ = " --inventory """ + .field$ + """"
    else
        .result$ = " --lang " + .field$
    endif
endproc

# Run `<command> align <wav> <arguments>` writing zipa.folder$/out.TextGrid, and read that TextGrid
# (zipa.textgrid: its object id). When no TextGrid comes back, stop with the command's stderr.
procedure zipaRun: .command$, .arguments$
    .out$ = zipa.folder$ + "/out.TextGrid"
    .err$ = zipa.folder$ + "/stderr.txt"
    runSystem_nocheck: .command$, " align """, zipa.wav$, """ ", .arguments$, " -q -o """, .out$, """ 2> """, .err$, """"
    .message$ = ""
    if fileReadable(.err$)
        .message$ = readFile$(.err$)
    endif
    if not fileReadable(.out$)
        @zipaCleanUp
        exitScript: "ZIPA failed (", .command$, "):", newline$, .message$
    endif
    zipa.textgrid = Read from file: .out$
    if .message$ <> ""
        appendInfoLine: .message$
    endif
    @zipaCleanUp
endproc

procedure zipaCleanUp
    deleteFile: zipa.folder$ + "/out.TextGrid"
    deleteFile: zipa.folder$ + "/stderr.txt"
    deleteFile: zipa.folder$ + "/in.TextGrid"
    deleteFile: zipa.wav$
    deleteFile: zipa.folder$
endproc

# Give the last two tiers of zipa.textgrid (zipa writes "phones" then "words") the form's names.
procedure zipaNameTiers: .phones$, .words$
    selectObject: zipa.textgrid
    .n = Get number of tiers
    Set tier name: .n - 1, .phones$
    Set tier name: .n, .words$
endproc
