"""The inline marker (issue 15 point 3): the channel's input re-emitted as MPEG-TS, delayed by
`output.delay_seconds`, with our SCTE-35 cues inserted on a PID of their own.

`ts` (TS packets and the PMT rewrite), `delayline` (the pure delay and cue placement),
`destinations` (file / UDP / SRT) and `marker` (the thread per channel the daemon runs).
"""
