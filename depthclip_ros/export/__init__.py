"""depthclip-export's library: the core's image path as one ONNX graph (`graph.export`), its
int8 version calibrated on camera frames (`quantization.export_int8`, frames from
`calibration.calibration_frames`). Needs torch (the tracing) and onnx; what runs the files is
in estimator/ (onnx_runtime, openvino_runtime), which needs neither.
"""
