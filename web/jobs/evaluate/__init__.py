"""Evaluate jobs: a labelled set in (a COCO dataset, or one folder per class), COCOeval's numbers out.

`dataset` reads and checks the set when the job is created, `matching` meets its categories with the
model's labels, `metrics` runs pycocotools' COCOeval (and the classifier counts) over the predictions,
`finisher` writes the results; `plots`, `gallery` and `report_html` draw the report people look at.
"""
