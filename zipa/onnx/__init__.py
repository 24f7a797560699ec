"""ONNX: exporting a model (:mod:`zipa.onnx.export`) and running the exported graphs with
onnxruntime behind the same interface as the torch model (:mod:`zipa.onnx.runtime`), which also
runs the graphs upstream ZIPA publishes (:mod:`zipa.onnx.upstream`)."""
