"""A device farm on TVM's RPC tracker: boards run harness.farm.server, a run asks the tracker
for boards of a key (e.g. rasp3b) and spreads its builds over them, one measurement per board
at a time."""
