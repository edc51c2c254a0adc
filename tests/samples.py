"""The sample world of the old service's test rows, as the fake peers serve it
(app/devtools/sample_peers.json), written out independently of that file."""

SAMPLE_STORES = {
    1: "노량진동",
    2: "풍무동",
    3: "상도동",
    4: "흑석동",
    5: "대방동",
    6: "신대방동",
    7: "사당동",
    8: "상도동",
    9: "서교동",
}
