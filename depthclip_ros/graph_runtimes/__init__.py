"""The runtimes of a graph written by depthclip-export, without torch: what they share
(`exported_graph.ExportedGraph`: metadata, checks, text features, feeds, DepthResult), ONNX
Runtime (`onnx_runtime`: CPU, CUDA, TensorRT) and OpenVINO (`openvino_runtime`: Intel CPUs, GPUs,
NPUs), each measuring its depth figure on the graph's reference frames where it runs
(`estimator.reference_frames`). `model_loading.load_estimator` chooses among them; nothing here
reads parameter files or imports torch or rclpy.
"""
