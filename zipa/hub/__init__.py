"""The released ZIPA models: their table, names and licences, and the Hugging Face Hub cache they
are fetched into (:mod:`zipa.hub.pretrained`). Imports nothing else of zipa, so that inference,
ONNX and training all reach the same models through public names."""
