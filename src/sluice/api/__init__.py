"""Typed Kubernetes resources (InferencePool, InferenceObjective, InferenceModelRewrite,
EndpointPickerConfig) and their CRD-equivalent validation. Pure; imports nothing of ours."""
