"""Generated stubs of the Open Inference Protocol (scripts/gen_protos.sh); do not edit."""
