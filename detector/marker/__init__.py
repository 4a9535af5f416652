"""The inline marker (issue 15 point 3): the channel's input re-emitted as MPEG-TS, delayed by
`output.delay_seconds`, with our SCTE-35 cues inserted on a PID of their own.

`ts` (TS packets and the PMT rewrite), `delayline` (the pure delay and cue placement),
`destinations` (file / UDP / SRT), `marker` (the thread per channel the daemon runs) and
`checks` (the delay-too-short warning of check-config). The bytes come from the sources'
raw-TS tap (detector.sources.tap).
"""
