"""Flow-control policies (llm-d's `pkg/epp/framework/plugins/flowcontrol`): fairness between the
flows of a priority band, ordering within a flow, usage limits per band."""
