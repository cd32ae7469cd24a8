"""Playing one pair over N worker processes: the parent (`parent`), each worker (`child`), their messages."""
