"""Scale-out: scoring on a Ray cluster (`dfserve score --ray [ADDRESS]`). Needs `dfserve[ray]`."""
