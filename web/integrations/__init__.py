"""The gateway where annotators work: a Label Studio ML backend (`label_studio/`, routes under
/label-studio/<model>) and CVAT's auto-annotation (`cvat/`: the function.yaml generator; the nuclio
function itself is deploy/cvat/). README.md, "Pre-labelling", says how to connect each."""
