"""The text side: the IPA tokenizer (:mod:`zipa.text.tokenizer`), IPA normalisation to ZIPA's
inventory (:mod:`zipa.text.ipa`), espeak-ng synthesis and phonemisation (:mod:`zipa.text.espeak`)
and grapheme-to-phoneme conversion (:mod:`zipa.text.g2p`)."""
