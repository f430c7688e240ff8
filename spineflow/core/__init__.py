"""What every stage shares: ids, BIDS paths, file writing, anatomy, the mid-sagittal plane,
SimpleITK helpers and the step runner."""
