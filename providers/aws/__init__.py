"""Amazon EC2/EBS provider: EBS direct block transfer, AMI registration, instance launch."""
