from integrations.probation.samples import write_examples

for path in write_examples():
    print(path)
