"""The ZIPA model: Zipformer2 encoder, CTC / transducer / attention-decoder heads, configuration
(presets, architecture inferred from weights), loading and saving weights (:mod:`zipa.model.io`)
and the interface search code relies on (:mod:`zipa.model.protocols`)."""
