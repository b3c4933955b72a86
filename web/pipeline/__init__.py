"""One picture's way through the gateway: check the upload, build the model's input, ask the model
server, decode its answer, draw it. `web.pipeline.request` carries what each picture needs from stage
to stage; the other modules are the stages' pure functions."""
